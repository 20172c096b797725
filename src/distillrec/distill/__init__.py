"""distill room."""

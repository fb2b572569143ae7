"""Hook rules: what create, update, delete and ping decide."""

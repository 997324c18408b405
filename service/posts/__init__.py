"""Posts: what users write; they belong to their author and go with them."""

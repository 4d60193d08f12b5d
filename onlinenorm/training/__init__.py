"""One training run: its config (schema, recipes, validation), the run itself, the data it reads and the
allocator setting it uses. Knows nothing about Ray."""

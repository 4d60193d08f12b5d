"""Online Normalization."""

"""Model prices: the admin price table and the exact cost of a usage record."""

"""Usage: the write-behind recorder and the tenant's usage report."""

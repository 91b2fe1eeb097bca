"""binbert hardware: the integer arithmetic contract (golden model) and Amaranth generators."""

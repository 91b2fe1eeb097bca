"""binbert simulation: cocotb testbenches that check the RTL against the golden model."""

"""Hardware side: board records, FINN dataflow build helpers and the board driver."""

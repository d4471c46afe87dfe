"""The command-line layer: argument types, shared option groups and the one-line error
convention of every openaff command."""

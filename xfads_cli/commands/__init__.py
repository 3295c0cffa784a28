"""One module per command: each parses nothing (cli.py does) and calls the library."""

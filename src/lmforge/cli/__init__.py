"""The command line: a thin front door. Each module parses arguments, calls the library and prints."""

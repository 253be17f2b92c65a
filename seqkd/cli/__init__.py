"""The `seqkd` command line: `main` builds the parser and runs one function per subcommand."""

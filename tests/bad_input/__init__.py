"""Bad input through the real command line (issue 6): one line, exit 2, nothing changed."""

"""The reasoning loop and everything it needs: messages, events, the output parser, model backends, the CLI."""

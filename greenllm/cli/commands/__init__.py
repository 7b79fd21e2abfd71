"""One module per ``greenllm`` subcommand, each with ``register(subparsers)`` and
``run(args) -> int``; :func:`greenllm.cli.build_parser` lists them."""

__all__: list[str] = []

"""How the engine's processes talk: control channel, point-to-point transport, link emulation,
a real shaped link between network namespaces, and worker placement."""

__all__: list[str] = []

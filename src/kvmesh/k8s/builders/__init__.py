"""Pure manifest builders: one module per child kind, each ``(Endpoint, RenderOptions) -> list``."""

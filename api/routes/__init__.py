"""Route modules; ``api.app`` mounts them."""

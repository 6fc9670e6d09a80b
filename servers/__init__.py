"""authbench's auth server: one aiohttp app, one backend per mechanism."""

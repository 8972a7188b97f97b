"""The HTTP edge: app factory and lifespan, middleware, error mapping, OpenAPI shapes, dependencies, routes."""

"""Code shared by llorch's programs: chat templates, the HTTP error shape, SSE framing, test models."""

"""Code shared by llorch's programs: chat templates, errors, SSE framing, test models."""

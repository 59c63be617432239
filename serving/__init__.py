"""Ray Serve deployments, the FastAPI ingress, request schemas and app builders."""

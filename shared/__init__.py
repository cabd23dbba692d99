"""Domain code shared by the ingress and the workers. Imports neither of them."""

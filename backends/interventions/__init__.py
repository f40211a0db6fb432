"""Model-side controls for local models: steering vectors and layer routers applied through
forward hooks (accelerated by `kernels`). Nothing lives here yet."""

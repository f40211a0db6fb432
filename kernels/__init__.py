"""Triton kernels with torch reference implementations (steering adds, layer-routing gathers,
activation norms). Depends only on torch and triton. Nothing lives here yet."""

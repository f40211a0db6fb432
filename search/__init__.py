"""Test-time search over partial solutions: best-of-N, beam search, particle filtering,
entropic particle filtering and A*-decoding, guided by outcome and process reward models.
Nothing lives here yet."""

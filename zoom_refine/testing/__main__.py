"""`python -m zoom_refine.testing`: train (or find in the cache) the protocol-trained tiny models."""

from zoom_refine.testing.tiny_models import main

main()

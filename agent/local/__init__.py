"""The local inference engine: a LangChain chat model over an in-process transformers model.

- `model`: `LocalVisionChatModel`, LangChain messages in, an `AIMessage` out.
- `messages`: LangChain messages to the transformers chat format (tool turns shaped as servers
  hand them to a chat template).
- `chat_tools`: bound tools rendered by the checkpoint's template, `<tool_call>` replies read.
- `backend`: loading a checkpoint once per process (`load_local_backend`) and the state shared
  by every chat model that names it (`LocalBackend`).
- `generation`: greedy decoding, one conversation or a batch, with prefix reuse and recovery
  from running out of memory.
- `batching`: `MicroBatcher`, which gathers concurrent calls into one batch.
- `prefix_cache`: key/value-cache reuse across the turns of a conversation.
- `image_cache`: `CachingImageProcessor`, which tiles each image once.

This package imports nothing here, so importing one module does not load the others.

Caches
------
The engine owns two of the project's image caches (all are listed, with key, bound, owner and
what each saves, in `docs/caches.md`):

- **Image tiles**: `image_cache.CachingImageProcessor.tiles`. Key: the image's (mode, size, xxh3
  fingerprint of its pixels) and the processor options. Bound: 8 images. Owner: the backend's
  processor (wrapped at load time).
- **Key/value prefixes**: `prefix_cache.PrefixCache`, held as `LocalBackend.prefix_cache`. Key: the
  token ids covered, each image's placeholder run replaced by its pixels' fingerprint. Bound: 4
  entries. Owner: the backend; emptied by `LocalBackend.release_memory` (out of memory).

Image blocks are decoded through `tools.encoding.decode_block_image` (the block cache, owned
there). Loaded checkpoints are kept in `backend._BACKENDS` (one per path and setting).
"""

"""Past one host: NATS JetStream joins memory systems on several hosts (DESIGN.md section 11).

Every local path stays local; this package only ships what the journal made durable to a JetStream
key-value bucket, applies the other hosts' writes by per-key revision, and offers the operations
that need the bucket itself (cluster locks, consistent reads). Nothing here is imported, and
``nats`` is never imported, unless ``MemoryConfig(cluster=ClusterConfig(...))`` asks for it.

- :mod:`.client`: a process's connection (its own event-loop thread) and the bucket's format;
- :mod:`.bridge`: the bridge role (one process per host) that replicates the key-value state;
- :mod:`.locks`: ``scope="cluster"`` locks by compare-and-set, fenced by the bucket's revision.
"""

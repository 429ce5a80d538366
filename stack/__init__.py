"""The one-command local stack: Redis, Label Studio with the export plugin, an RQ worker and the ML backend."""

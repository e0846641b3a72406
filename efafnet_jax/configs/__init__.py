"""The packaged configs: `--config NAME[:spec]` with NAME one of coco, crowdpose, mpii,
quickstart, tiny (and `workdir:W`, a training workdir's saved config.json)."""

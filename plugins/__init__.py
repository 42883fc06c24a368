"""Built-in plugins (document loaders, embedders, rerankers), registered the way third-party ones are."""

"""w2v-BERT semantic tokens: the model, its pre-training, k-means, and the
`SemanticTokenizer` API (`soundlm.semantic.api`)."""

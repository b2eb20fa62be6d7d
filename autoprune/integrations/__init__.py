"""Model families and data from outside: timm models and the bundled digits task (`models`,
`digits`), and HuggingFace transformers (`huggingface`, needs `autoprune[hf]`)."""

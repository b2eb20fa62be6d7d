"""Model families and data from outside: timm models and the bundled tasks (`models`,
`bundled_data`, `digits`), and HuggingFace transformers (`huggingface`, needs `autoprune[hf]`)."""

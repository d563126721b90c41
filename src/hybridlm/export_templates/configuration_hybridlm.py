"""Config of a hybridlm model exported for `transformers` (shipped inside the export)."""

from transformers import PretrainedConfig


class HybridLMConfig(PretrainedConfig):
    model_type = "hybridlm"

    def __init__(self, vocab_size=8192, n_layer=12, n_head=6, d_model=384, d_ffn=1280, max_seq_len=512,
                 rope_theta=10000.0, norm_eps=1e-6, mntp=False, objective="masked", n_kv_heads=0, tie_embeddings=True,
                 **kwargs):
        self.vocab_size, self.n_layer, self.n_head, self.d_model, self.d_ffn = vocab_size, n_layer, n_head, d_model, d_ffn
        self.max_seq_len, self.rope_theta, self.norm_eps = max_seq_len, rope_theta, norm_eps
        self.mntp, self.objective = mntp, objective  # mntp: position i predicts token i+1 (GPT-BERT)
        self.n_kv_heads, self.tie_embeddings = n_kv_heads, tie_embeddings  # 0: multi-head; False: lm_head.weight
        kwargs.setdefault("tie_word_embeddings", False)  # the head reuses the embedding matrix directly
        super().__init__(**kwargs)

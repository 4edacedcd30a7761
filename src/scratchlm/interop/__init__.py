"""Interop: scratchlm models and tokenizers to and from other tools.

    hf.py            export a run as a Hugging Face folder (GPT2LMHeadModel or LlamaForCausalLM);
                     import a local GPT-2 (or Llama) checkpoint folder as a run
    hf_tokenizer.py  a Hugging Face byte-level BPE (tokenizer.json, or vocab.json + merges.txt) as our BPE
    gguf.py          export a run as one GGUF file for llama.cpp

An extra: it imports the core, the core never imports it. transformers is needed only
to *use* an exported folder (and by the tests), not to write or read one.
"""

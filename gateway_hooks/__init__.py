"""Request hooks shipped with the gateway (turn them on with GATEWAY_HOOKS; see docs/hooks.md).

- gateway_hooks.pii.PiiMask: e-mail addresses, phone numbers and card numbers in prompts are
  replaced by placeholders before the request leaves; the mapping is kept only in the log.
- gateway_hooks.model_policy.ModelPolicy: a model allow-list and a max_tokens ceiling.
"""

"""Every sentence the model reads: the QwQ-32B chat-format renderer and the system-prompt templates (*.j2)."""

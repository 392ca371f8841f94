"""Corruption plugins: channels that act on bitstream bytes, and corruptions of decoded latents.

The registry is :data:`harness.registry.CORRUPTIONS`; each plugin is one module here.
"""

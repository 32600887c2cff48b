"""cartd: data carts for scientific archives, a drop-in successor to Pacifica Cartd."""

__version__ = "0.1.0"

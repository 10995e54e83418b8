"""What leadwire knows of Meta's formats beyond the Graph client: customer-data normalization and hashing."""

"""A stand-in CRM for the demo (`make up`): receives leadwire's signed lead webhook and shows what arrived."""

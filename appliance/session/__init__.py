"""The villager's service session: a state machine in the appliance that the kiosk UI renders."""

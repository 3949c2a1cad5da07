"""A tiny shop. Prices are dollar amounts such as 19.99; the tests compare amounts exactly."""


def format_price(amount):
    """'$19.99'"""
    return f"${amount:.2f}"

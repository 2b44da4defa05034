"""Boards: one thin file per FPGA board, plus the Verilator simulation board."""

BOARD_MODULES = ("ulx3s", "colorlight_i5", "colorlight_i9", "orangecrab", "ecpix5")


def boards():
    """{--board name: Board} for every ECP5 board."""
    import importlib
    found = {}
    for m in BOARD_MODULES:
        b = importlib.import_module(f"{__name__}.{m}").BOARD
        found[b.name] = b
    return found


def get_board(name):
    from roma.host.errors import RomaError
    all_boards = boards()
    key = name.lower().replace("_", "-")
    if key not in all_boards:
        raise RomaError(f"--board {name}: known boards are {', '.join(all_boards)}")
    return all_boards[key]

"""The arbiter's supervision loop on the board (MicroPython runs ``main.py`` at boot).

Order matters: the watchdog starts first (RP2040: at most 8388 ms; fed every tick, a few ms apart, so
a hung loop resets the board within ``wdt_ms`` while its lease lines stop toggling at once), then the
wired network (W5500 over SPI; never Wi-Fi power-save, docs/failover.md), then the loop. The network
coming up late or never changes nothing for the lease: reporting simply waits for it.
"""

import time

import machine

try:
    from drivers.failover_controller import board
except ImportError:
    import board


def wired_network(cfg):
    """The W5500 on SPI, DHCP or a static address; None when the board has none (reporting off)."""
    try:
        import network
    except ImportError:
        return None
    net = cfg.get("network") or {}
    if not net:
        return None
    spi = machine.SPI(
        net.get("spi", 0),
        2_000_000,
        mosi=machine.Pin(net["mosi"]),
        miso=machine.Pin(net["miso"]),
        sck=machine.Pin(net["sck"]),
    )
    nic = network.WIZNET5K(spi, machine.Pin(net["cs"]), machine.Pin(net["reset"]))
    nic.active(True)
    if net.get("ip"):
        nic.ifconfig((net["ip"], net["netmask"], net["gateway"], net.get("dns", net["gateway"])))
    else:
        nic.ifconfig("dhcp")
    return nic


def run(cfg, uart, wdt, make_client, on_event=None, should_stop=None):
    ctl = board.Controller(cfg, uart, wdt, make_client, on_event)
    tick_ms = cfg.get("tick_ms", 2)
    while should_stop is None or not should_stop():
        ctl.step()
        time.sleep_ms(tick_ms)
    return ctl


def main():
    cfg = board.load_config()
    wdt = machine.WDT(timeout=min(cfg.get("wdt_ms", 2000), 8388))
    sw = cfg["switcher"]
    uart = machine.UART(
        sw.get("uart", 0),
        baudrate=sw.get("baud", 9600),
        tx=machine.Pin(sw["tx"]),
        rx=machine.Pin(sw["rx"]),
        timeout=0,
    )
    make_client = None
    if cfg.get("mqtt", {}).get("host"):
        try:
            wired_network(cfg)
            from umqtt.simple import MQTTClient

            make_client = MQTTClient
        except (ImportError, OSError):
            make_client = None  # no network: the lease runs on, unreported
    run(cfg, uart, wdt, make_client)


if __name__ == "__main__":
    main()

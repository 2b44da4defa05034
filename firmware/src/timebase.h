/* Cycle time from the timer's uptime counter. */
#pragma once
#include <stdint.h>
#include <generated/csr.h>
#include <generated/soc.h>

static inline uint64_t uptime(void)
{
	timer0_uptime_latch_write(1);
	return timer0_uptime_cycles_read();
}

static inline uint64_t timeout_cycles(uint32_t ms)
{
	return (uint64_t)CONFIG_CLOCK_FREQUENCY / 1000 * ms;
}

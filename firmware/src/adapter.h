/* LoRA adapters over the link: loaded in chunks (its program and its H-unit bank contents, CRC-32 checked at
   the end), then selected; the KV cache's part of the banks is never written. */
#pragma once
#include "link.h"

void adapter_begin(const struct frame *f);
void adapter_cmds(const struct frame *f);
void adapter_data(const struct frame *f);
void adapter_end(const struct frame *f);
void adapter_select(const struct frame *f);
/* INFO's adapter fields: hash (zeros when none), loaded, selected */
void adapter_info(uint8_t *hash16, uint8_t *loaded, uint8_t *selected);

/* abi_major_2.c -- a test plugin built for a future major ABI: refused. */
#include "loom/plugin.h"

static const loom_plugin major_plugin = {
    .abi_major = 2,
    .abi_minor = 0,
    .name = "abi_major_2",
};

LOOM_PLUGIN_DEFINE(abi_major_2)
{
    return &major_plugin;
}

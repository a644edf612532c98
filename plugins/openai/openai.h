/* openai.h -- the entry of the openai provider plugin when linked in.
 *
 * Everything else about the plugin is private to openai.c. */
#ifndef LOOM_PLUGINS_OPENAI_H
#define LOOM_PLUGINS_OPENAI_H

#include "loom/plugin.h"

#ifdef LOOM_BUILTIN_PLUGIN
/* The entry of the plugin when linked into the host (see LOOM_PLUGIN_DEFINE). */
const loom_plugin *loom_builtin_openai_entry(void);
#endif

#endif

/* Error case: a rule may only reference rules declared before it (yara 4.2.3 rejects this file; so must we). */
rule a { condition: b }
rule b { condition: true }

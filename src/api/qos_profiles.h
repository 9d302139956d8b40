/* CAMARA QoS Profiles 1.1.0 (/qos-profiles/v1): the catalogue as QosProfile objects. Profiles restricted to
 * particular devices (catalogue extension "x-devices") are listed only for a matching device. */
#ifndef QOD_API_QOS_PROFILES_H
#define QOD_API_QOS_PROFILES_H

#include "api/api.h"

/* GET /qos-profiles/v1/qos-profiles/{name} */
void qod_profiles_get(qod_call *c, qod_req *r);
/* POST /qos-profiles/v1/retrieve-qos-profiles */
void qod_profiles_retrieve(qod_call *c, qod_req *r);

#endif

# romana fabric routes for device tor1 (tor, group rack=r1): 3 route(s) (1 ECMP)
ip route replace fd00:10::/48 proto static nexthop via fd00:ff:: nexthop via fd00:ff::2  # pool v6 via spine1
ip route replace fd00:10::/60 proto static via fd00:1::11  # host h1
ip route replace fd00:10:0:10::/60 proto static via fd00:1::12  # host h2
